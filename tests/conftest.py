"""Suite-wide test settings.

Under CI (``CI`` set), hypothesis runs derandomized: the same examples every run, so a red CI
always means a change broke something, never that a new random example was drawn. Locally it
explores new examples on every run.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

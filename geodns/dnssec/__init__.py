"""DNSSEC online signing for geoedge's zones: keys (keys.py), pure signing decisions
(policy.py) and the signer that adds RRSIGs and compact denial to answers (signer.py).

dnspython is imported here first, with cryptography's "DSA is deprecated" warning silenced
for that import only: dnspython's DSA module touches the deprecated classes when it is
loaded (recent cryptography releases: 51 here), which printed eight lines of warnings on
every start of ``geoedge dns``. geoedge never signs nor validates with DSA (keys.py: ECDSA P-256 and
Ed25519), so the warning tells an operator nothing.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    import dns.dnssec  # noqa: F401

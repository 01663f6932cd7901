"""DNSSEC online signing for geoedge's zones: keys (keys.py), pure signing decisions
(policy.py) and the signer that adds RRSIGs and compact denial to answers (signer.py)."""

"""The exchange (seed 001 §2.4): the CertID list now; order books and matching next."""

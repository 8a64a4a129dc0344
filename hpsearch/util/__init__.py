"""Small services the rest of hpsearch builds on.

Connections (storage and tracking URLs), password redaction, safe YAML, progress output and
the failpoints the fault tests arm.
"""

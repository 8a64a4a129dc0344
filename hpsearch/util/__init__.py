"""Small services the rest of hpsearch builds on: connections, redaction, safe YAML, progress, failpoints."""

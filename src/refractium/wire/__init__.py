"""Pure byte codecs: the PROXY protocol (v1 and v2) and rejection replies."""

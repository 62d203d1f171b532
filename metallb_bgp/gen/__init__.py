"""Build-time generators (CRD schemas, the docs' reference tables): nothing at run time imports them."""

"""rtd: real-time decisions on PyFlink. The CLI, the config and the local stack."""

"""Webhooks as a library: signature schemes (``signatures``), their header names (``headers``) and the
configured senders (``sources``). The gateway verifies deliveries with it and the CLI signs test
deliveries with it, so neither needs the other. Import from the modules."""

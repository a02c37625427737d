"""Who may talk to the stack's NATS, and how: a private CA, one certificate per role, the server's
configuration with each role's permissions, and the privilege drop of the stack's containers."""

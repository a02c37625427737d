"""The library every service imports: messages, names, bus, config, logging, registry, containers."""

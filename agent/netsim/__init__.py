"""A network that behaves like Wi-Fi, in user space, between the agent and the emulator (see profiles)."""

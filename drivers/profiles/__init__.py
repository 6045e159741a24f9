"""Example Modbus detector profiles (TOML), loaded by ``drivers.modbus_profiles.builtin_profiles``."""

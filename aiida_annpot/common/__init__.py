"""Configuration schemas shared by the engine and the AiiDA plugin (no torch, no AiiDA imports)."""

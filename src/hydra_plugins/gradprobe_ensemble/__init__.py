"""gradprobe's Hydra plugins (Hydra only loads launchers from the hydra_plugins package)."""

"""systemd and containers: sd_notify, socket activation, the orphan reaper, unit files."""

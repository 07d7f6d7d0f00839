"""Tool wrappers: thin typed adapters over real client libraries (kubernetes, NVML, billing)."""

"""Packaged data of imcsim: macro presets (presets/) and energy presets (energy/)."""

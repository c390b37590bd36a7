"""Device drivers: they know devices and their wire protocols, never runs or schedules."""

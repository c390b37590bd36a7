"""The daemon: builds the station's parts, starts them in a safe order, stops them safely."""

"""The site around the release: GNSS receivers and weather stations (NMEA readers),
release-point positions and surveys, the host clock against GNSS time."""

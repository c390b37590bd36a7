"""The path of a sample: device pollers publish on the bus; the recorder and the
live cache consume it."""

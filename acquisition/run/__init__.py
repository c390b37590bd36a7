"""Calibration runs: sequences and plans, the scheduler and its state machine, the
decisions it takes, MFC ranging, truth and its uncertainty, interlocks, the run status."""

"""`crf report`: a run's results.json, its original calibration record and the certificate's
results page (HTML and PDF, Chinese and English), with their plots."""

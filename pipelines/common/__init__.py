"""What every package of ``pipelines`` shares: errors, output files, names, progress."""

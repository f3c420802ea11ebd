"""Where bars come from: CSV files, online sources, bar policies, and the loader."""

"""Reading and writing plain files (label tables) with errors that name the file and row."""

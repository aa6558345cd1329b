"""Files shipped with the package: The Complete Journey's product groups and column mapping."""

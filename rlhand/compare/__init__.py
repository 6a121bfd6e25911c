"""rlhand-compare: read finished runs' metrics and configs, write comparison plots and a table."""

"""Run records, their aggregation into tables, and the paper's published numbers."""

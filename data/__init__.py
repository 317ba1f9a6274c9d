"""Everything about bytes on disk and examples in memory; knows no model."""

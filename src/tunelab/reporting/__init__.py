from tunelab.reporting.tables import before_after_table, cost_table, human_bytes, markdown_table

__all__ = ["before_after_table", "cost_table", "human_bytes", "markdown_table"]

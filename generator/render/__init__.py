"""Rendering: records → matplotlib Figures. The only place that draws; it never recomputes."""

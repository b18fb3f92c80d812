"""Files the tool owns: atomic writes, the content-addressed result cache, paths kept in their folder."""

"""The site: Markdown pages, the explorer's files, the hash manifest, the theme and its assets."""

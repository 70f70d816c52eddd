"""Exchange: round trips with human coders (REFI-QDA .qdpx projects, the review page, their corrections)."""

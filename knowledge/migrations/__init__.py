"""Alembic migrations of the knowledge base (run by ``KnowledgeBase.init``; no alembic.ini needed)."""

"""Alembic environment: migrations run on the connection ``KnowledgeBase.init`` passes in ``attributes``."""

from __future__ import annotations

from alembic import context

from metaedge.knowledge.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the knowledge-base migrations through metaedge.knowledge.KnowledgeBase.init(url)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""metaedge.knowledge: the server-side knowledge base.

Journals ingested, lineage, fleet units, model-update decisions, drift alerts and calibration certificates.
"""

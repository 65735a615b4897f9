"""Paired A/B gate: the old and the new environment interleaved in one session.

``schedule`` orders seeded, balanced AB/BA pairs; ``arms`` runs a case in a given interpreter
(one arm server, with its own fork server, per environment); ``observe`` reduces a run to volume
rows and per-metric centres; ``paired`` turns per-pair log ratios into a verdict (Wilcoxon
signed-rank, Hodges-Lehmann change and interval, sequential stopping); ``gate`` runs one case
through both arms and returns verdict rows.  No torch in this process: the arms import it.
"""

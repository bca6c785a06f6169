"""The books against the venue: the venue's income history compared with the journal.

``compare`` (pure: income records and journal rows in, per-trade and per-day rows and the
differences beyond tolerance out) and ``sources`` (where each venue's income history is
read). The ledger service (``services/ledger``) runs a comparison every few minutes;
``quantumctl ledger`` runs one on demand.
"""

"""The paper venue: a simulated USDⓈ-M futures book that settles in event time.

``config`` (its economics), ``execution`` (:class:`PaperExchange`, the book), ``record``
(the book's durable local record, its only way back after the state key is lost) and
``factory`` (how execution builds it from settings, by the name ``paper``).
"""

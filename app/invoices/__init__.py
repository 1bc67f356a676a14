"""Invoices and receipts read into fields (``app.invoices.fields``): plain Python, no Flask or SQL."""

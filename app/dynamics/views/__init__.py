"""The dynamics pages' view models: form.py holds the shared widgets, one module per page."""

"""Event types by domain. The union of all of them is :data:`streams.catalog.AnyEvent`."""

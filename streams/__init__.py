"""What flows: event and request types, the subject taxonomy, stream definitions, upcasters."""

"""The hybrid LLM: task classification, routing to cloud or local model, the cloud client."""

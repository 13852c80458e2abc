"""Model serving: a TF Serving-compatible gRPC model server and the job's batching client."""

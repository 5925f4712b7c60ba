"""Generated protobuf messages of the Open Inference Protocol v2 (see ``oip_v2.proto``)."""

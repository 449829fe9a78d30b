"""The kubelet's pod-resources API: which pod and container each GPU and MIG device is allocated to.

``v1/`` holds the kubelet's ``api.proto`` and the gRPC stubs generated from it (checked in;
``scripts/generate-kubelet-stubs`` regenerates them). ``podresources`` is the client.
"""

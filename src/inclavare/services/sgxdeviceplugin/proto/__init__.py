"""The kubelet device plugin API v1beta1 (deviceplugin.proto, package v1beta1): generated modules."""

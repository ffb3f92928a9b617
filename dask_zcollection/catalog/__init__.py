"""The partition index (catalog) and its commit protocol."""

from ._catalog import CATALOG_FORMAT, Catalog, decode_catalog, encode_catalog

__all__ = ["CATALOG_FORMAT", "Catalog", "decode_catalog", "encode_catalog"]
from ._log import CATALOG_DIR, CatalogLog

__all__ += ["CATALOG_DIR", "CatalogLog"]

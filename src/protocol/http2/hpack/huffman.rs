//! Huffman code (RFC 7541 Appendix B). STUB

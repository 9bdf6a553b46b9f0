//! Static and dynamic tables (RFC 7541 §2.3, Appendix A). STUB

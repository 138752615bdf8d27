//! STIX 2.1 patterning: grammar, AST, printing and classification.

//! Stateright models of the crosscheck designs.

"""Results on the wire: the columnar result table, and the BFV parameters of encrypted cells."""

//! Amazon Data Firehose (`Firehose_20150804.*`, JSON 1.1, SigV4 service `firehose`). Being
//! built for issue 10; so far the pure pieces: the S3 prefix expressions ([`prefix`]) that
//! delivery streams are created with, the object names, compression formats and file
//! extensions ([`key`]) their objects are delivered under, the Lambda transformation
//! contract ([`lambda`]) and the error records written under the error prefix ([`errors`]).

pub mod errors;
pub mod key;
pub mod lambda;
pub mod prefix;
